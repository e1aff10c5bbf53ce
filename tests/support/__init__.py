"""What the tests share: paths, one CLI runner, one free port, one params editor, one
process helper, and the fixtures of each area (serving, promotion, monitoring, deployment)."""
