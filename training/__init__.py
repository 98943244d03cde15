"""The DP-SGD LoRA trainer of prov: trains an adapter (Opacus per-sample gradients, our own fixed-order clipping,
accumulation and noise) and records its provenance as it goes.

Modules: `config` (validated config, CLI overrides), `data` (how data is read), `model` (loading + LoRA), `tiny`
(demo model builder), `noise` (`prov.noise.v2`), `dpstep` (the step's arithmetic in a fixed order), `plan` (resolved
numbers + accountant), `engine` (one step), `checkpoint`, `statslog` (private per-step statistics), `runinfo`
(run manifest), `rundir` (creating a run), `trainer` (`train`, `resume`, torchrun ranks), `distributed` (a torchrun
rank), `launch` (what `prov train` does), `determinism` (profiles), `replay` (the replay worker). Importing this
package does not import torch; `config`, `data`, `runinfo`, `rundir`, `launch`, `statslog` and `determinism` never do.
"""
