from weflow.cli import main

main()
