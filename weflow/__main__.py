from weflow.cli.app import run

run()
