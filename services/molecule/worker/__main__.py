from services.molecule.worker.chunks import main

main()
