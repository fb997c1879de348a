"""Front door: the `breastcadx` command (main, batch, pacs)."""
