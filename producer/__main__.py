from producer.cli import main

main(prog_name="askq")
