from chatllm.cli.app import main

main()
