"""The DP-SGD LoRA trainer of prov: trains an adapter with Opacus and records its provenance as it goes.

Modules: `config` (validated config), `data` (examples, salted dataset root, batches), `modelfiles` (base-model
digest), `model` (loading + LoRA), `tiny` (demo model builder), `seeds` (secrets and derived randomness),
`sampler` (Poisson sampling), `plan` (resolved numbers + accountant), `engine` (one step), `checkpoint`,
`trainer` (`train`, `resume`), `replay` (`replay_segment`). Importing this package does not import torch;
`config`, `data`, `modelfiles`, `sampler` and `seeds` never do.
"""
