"""smoker-infra: the Smart Smoker V2 platform on Proxmox VE (see README.md)."""

from stacks.platform import main

main()
