"""ZWFS reconstruction, one folder per job (imports run down this list, never up):

- `recon.cli`: the `recon` command line, one module per command;
- `recon.evaluation`: metrics, evaluation runs, closed loop, report writers;
- `recon.estimators`: every frames -> OPD [nm] reconstructor behind one `Estimator`
  contract (analytic, network, refinement), lab inference, export;
- `recon.train`: configs, data, the LightningModule, run folders, distillation, benchmark;
- `recon.models`: the registered networks, `ReconModel`, the checkpoint format and loader;
- `recon.losses`, `recon.nn`: the standalone library of losses and vision blocks.
"""
