"""The challenger beside the champion inside the server: shadow and canary routing, and the
admin route that switches the mode."""
