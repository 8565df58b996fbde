from chatllm.cli.entry import main

main()
