"""ZWFS dataset format: schema, HDF5 writer, readers (xarray, PyTorch, lab FITS frames)."""
