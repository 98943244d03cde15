"""`prov demo`: the whole product on embedded defaults, end to end, in one directory.

In DIR (default `./prov-demo`): start a local anvil with its state persisted in `DIR/.prov/chain` (or, if anvil is not
installed, the in-process py-evm chain, saying so), deploy the registry, build the tiny model and copy the demo
dataset, train a DP-SGD LoRA adapter with several checkpoints (anchored and stored through the outbox as it trains,
local store in `DIR/.prov/store`), copy the run's `final/` directory (the adapter as PEFT loads it) to `DIR/adapter`
and verify it with bitwise replay of sampled segments (terminal summary, `DIR/report.html`, `DIR/report.json`), then
flip one bit of a copy of the adapter weights and show that verification fails,
and why; finally merge the adapter into the base model (`prov.merge.v1`, `DIR/merged-model`, whose digest the trainer
committed when it finalised the run) and verify the merged model too. anvil is stopped at the end; its state stays, so
`cd DIR && prov verify adapter ...` later, in a new process, restarts it from that state and finds
the same registry.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from provenance import config
from provenance.errors import ProvenanceError

Echo = Callable[[str], None]


def _start_chain(home: Path, echo: Echo) -> tuple[Any, bool]:
    """The registry client on the demo's anvil (deploying once per DIR), or on py-evm when anvil is absent."""
    from provenance import devchain
    from provenance._chain.anvil import find_anvil
    from provenance.chain import connect

    if find_anvil() is None:
        echo("anvil is not installed (scripts/setup installs it): using the in-process py-evm chain instead; "
             "nothing on it outlives this process")
        registry = connect("tester", use_config=False)
        registry.deploy()
        return registry, False
    node = devchain.up(home=home, port=0)
    echo(f"chain     anvil {'running' if node.already_running else 'started'} at {node.rpc_url} "
         f"(pid {node.pid}, state in {node.state_file})")
    section = config.get_section("chain", home)
    if section.get("registry"):
        try:
            registry = connect(home=home)
            echo(f"registry  {registry.address} (deployed earlier, found in the persisted chain state)")
            return registry, True
        except ProvenanceError:
            pass  # the chain state was lost: deploy again
    registry, info = devchain.deploy(home=home)
    echo(f"registry  deployed ProvenanceRegistry at {registry.address} (tx {info.tx_hash[:18]}…, "
         f"{info.gas_used:,} gas)")
    return registry, True


def _train(out: Path, home: Path, *, persistent: bool, registry: Any, store: Any, steps: int, every: int,
           echo: Echo) -> Any:
    from training import determinism
    from training.config import TrainConfig, with_overrides
    from training.data import DEMO_DATA

    determinism.apply_profile("portable")  # before torch is imported below, so the demo run is replayable elsewhere
    from training.tiny import build_tiny_model
    from training.trainer import train

    model = out / "model"
    if not (model / "config.json").exists():
        build_tiny_model(model)
    data = out / "data.jsonl"
    shutil.copyfile(DEMO_DATA, data)
    echo(f"model     tiny Llama (random init, fixed seed) in {model}; data {data} ")
    overrides: dict[str, Any] = {"model.path": str(model), "data.path": str(data), "training.steps": steps,
                                 "training.checkpoint_every": every, "training.threads": 2,
                                 "anchor.enabled": persistent, "anchor.flush_timeout": 120.0}
    result = train(with_overrides(TrainConfig(), overrides), quiet=False)
    if result.run_dir is None:
        raise ProvenanceError("training recorded no run directory")
    from provenance.anchor import Outbox
    from training.anchoring import read_merged

    # py-evm lives in this process only: anchor through an outbox sharing our client. Either way, close the run
    # on chain once it is anchored (its block also gives the verifier a hash nobody knew at commit time).
    clients = {} if persistent else {"chain": "tester", "registry_client": registry, "store_client": store}
    with Outbox.open(result.run_dir, reuse_target=persistent, **clients) as box:
        if not persistent:
            box.enqueue_run(run_id=bytes.fromhex(result.run_id), manifest_path=result.run_dir / "run.json")
            for index in result.checkpoints:
                box.enqueue_checkpoint(index=index, checkpoint_dir=result.run_dir / "checkpoints" / f"{index:06d}")
        # The trainer finalised the run (training.anchoring.finalize_run): its outbox holds the finalisation with the
        # merged weights' digest, also recorded in merged.json; py-evm's fresh outbox queues the same one here.
        merged = read_merged(result.run_dir)
        box.enqueue_finalize(merged)
        if not box.flush(timeout=120):
            raise ProvenanceError(f"anchoring did not finish: {box.status_line()}")
        echo(f"anchored  {box.status_line()} (registration, {len(result.checkpoints)} checkpoints, finalization "
             f"committing the merged weights {merged})")
    return result


def _verify_merged(out: Path, checkpoint: Path, *, registry: Any, store: Any, echo: Echo) -> dict[str, Any]:
    """`prov merge` the final checkpoint into the base model, then `prov verify` the merged model (found through the
    digest the run's finalisation committed; the merge recomputed from the base model and compared)."""
    from provenance.merge import write_merged
    from provenance.report import render_text
    from provenance.verify import VerifyOptions, verify

    target = out / "merged-model"
    shutil.rmtree(target, ignore_errors=True)
    merged = write_merged(out / "model", checkpoint, target)
    echo(f"\n== prov merge: the adapter merged into the base model (prov.merge.v1) in {target}\n"
         f"   tensors {merged.tensor_digest}, the digest the run's finalisation committed\n")
    echo("== prov verify merged-model --base-model model\n")
    report = verify(target, registry=registry, store=store,
                    options=VerifyOptions(base_model=out / "model", replay="0")).to_json()
    echo(render_text(report))
    return report


def _mine(registry: Any, blocks: int) -> None:
    """Mine `blocks` empty blocks on the demo's own development chain, so the block whose hash draws the replayed
    segments (a few blocks after the run's finalisation) exists. Only a development chain allows this, and the
    report labels such chains: whoever runs one controls its block hashes."""
    web3 = registry.web3
    if registry.transport.rpc_url == "tester":  # the in-process py-evm chain
        web3.testing.mine(blocks)
        return
    for _ in range(blocks):  # anvil and Hardhat: one block per call, at the next timestamp
        web3.provider.make_request("evm_mine", [])


def run_demo(out: Path, *, steps: int = 30, checkpoint_every: int = 10, replay: str = "2",
             echo: Echo = print) -> int:
    """Run the demo in `out`. Returns 0 when the honest adapter verified and the tampered one failed."""
    from provenance.report import render_text, write_html
    from provenance.store import open_store
    from provenance.verify import VerifyOptions, verify

    started = time.monotonic()
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    home = out / config.STATE_DIR_NAME
    os.environ[config.ENV_HOME] = str(home)  # every part (trainer, outbox, verifier) uses DIR's state
    config.update_section("store", {"spec": "local"}, home)
    registry, persistent = _start_chain(home, echo)
    try:
        store = open_store("local", home=home)
        result = _train(out, home, persistent=persistent, registry=registry, store=store, steps=steps,
                        every=checkpoint_every, echo=echo)
        run_dir: Path = result.run_dir
        final = run_dir / "checkpoints" / f"{result.checkpoints[-1]:06d}" / "adapter_model.safetensors"
        # what people load: the run's final/ directory (adapter + adapter_config.json), as PEFT reads it
        adapter = out / "adapter"
        if adapter.exists():
            shutil.rmtree(adapter)
        shutil.copytree(run_dir / "final", adapter)
        echo(f"\ntrained   {result.steps} steps, checkpoints {result.checkpoints}, ε = {result.epsilon:.4g}; "
             f"anchored: {result.anchored or not persistent}\nadapter   {adapter} (the run's final/ directory: "
             "the adapter as PEFT loads it)")
        # The demo plays the auditor: the verifier mixes a seed it draws itself into the segment draw (recorded in
        # the report), since on its own development chain the block hashes prove nothing.
        options = VerifyOptions(base_model=out / "model", data=out / "data.jsonl", secrets=run_dir / "secrets.json",
                                replay=replay)
        echo("\n== prov verify adapter (the shipped directory, with the data and secrets an auditor is given)\n")
        _mine(registry, options.confirmations)  # the beacon block: mined after the run was finalised
        report = verify(adapter, registry=registry, store=store, options=options).to_json()
        write_html(report, out / "report.html")
        (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        echo(render_text(report))
        tampered = out / "tampered-adapter.safetensors"
        data = bytearray((adapter / "adapter_model.safetensors").read_bytes())
        data[-3] ^= 0x01  # one bit of one weight
        tampered.write_bytes(bytes(data))
        echo("\n== prov verify tampered-adapter.safetensors (one bit of one weight flipped)\n")
        bad = verify(tampered, registry=registry, store=store).to_json()
        echo(render_text(bad))
        merged = _verify_merged(out, final.parent, registry=registry, store=store, echo=echo)
    finally:
        if persistent:
            from provenance import devchain

            devchain.down(home=home)
    ok = report["exit_code"] == 0 and bad["exit_code"] != 0 and merged["exit_code"] == 0
    echo(f"\nreport    {out / 'report.html'} (HTML audit report), {out / 'report.json'}")
    echo(f"done in {time.monotonic() - started:.0f} s: honest adapter {report['verdict']}, tampered copy "
         f"{bad['verdict']}, merged model {merged['verdict']}.")
    if persistent:
        rel = run_dir.relative_to(out)
        echo(f"\nVerify again later, in a new process (anvil restarts from its saved state):\n"
             f"  cd {out} && prov verify adapter --base-model model --data data.jsonl "
             f"--secrets {rel}/secrets.json --report report.html\n"
             f"  cd {out} && prov verify merged-model --base-model model")
    return 0 if ok else 1
