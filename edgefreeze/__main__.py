from edgefreeze.cli import main

main()
