from pthkit.cli.main import entrypoint

entrypoint()
