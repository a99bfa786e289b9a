"""Images: geometry, checked readers and verified writers (SimpleITK)."""
