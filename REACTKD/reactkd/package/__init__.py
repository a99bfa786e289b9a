"""Model packages: sealed safetensors weights with metadata, and the catalogue of installed packages."""
