from plumbline.cli.main import main

raise SystemExit(main())
