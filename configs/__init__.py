"""The packaged YAML defaults: `configs/sim/*.yaml` and `configs/recon/*.yaml`.

Shipped as package data, so a name such as ``quick`` resolves the same from a source
checkout, an editable install and a wheel (`common.config.config_file`).
"""
