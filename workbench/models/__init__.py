"""Model profiles and pulling them from the Hugging Face hub: `workbench models list | pull | verify`."""
