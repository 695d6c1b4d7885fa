"""Seconds per pretraining step of each tiny family at its defaults, on one torch thread (interleaved rounds)."""
import tempfile, time, torch
from subbench.plugins import get
from subbench.context import Context
from subbench.lm.corpus import CorpusSpec, conversations
from subbench.lm.pretrain import encode_conversations, batch_tensors, selected_logits
from subbench.lm.tokenizer import build_tokenizer
from pathlib import Path
import torch.nn.functional as F
ctx = Context(workdir=Path(tempfile.mkdtemp()), quiet=True); ctx.setup_torch()
tok = build_tokenizer()
stream = conversations(CorpusSpec(seed=1234, p_copy=0.5))
items = encode_conversations(tok, [next(stream) for _ in range(64 * 20)])
res = {}
for rnd in range(2):
    for name in ["tiny-llama", "tiny-qwen2", "tiny-gpt2", "tiny-mistral"]:
        fam = get("families", name); p = fam.resolve_params({})
        cfg, cls = fam.config(p, tok); torch.manual_seed(0); m = cls(cfg); m.train()
        opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
        t = time.process_time()
        for s in range(20):
            ids, att, tgt = batch_tensors(items[s * 64:(s + 1) * 64], tok.pad_token_id)
            lg, y = selected_logits(m, ids, att, tgt); loss = F.cross_entropy(lg, y)
            opt.zero_grad(); loss.backward(); opt.step()
        res.setdefault(name, []).append((time.process_time() - t) / 20)
        res[name + "_n"] = sum(x.numel() for x in m.parameters())
for name in ["tiny-llama", "tiny-qwen2", "tiny-gpt2", "tiny-mistral"]:
    print(f"{name}: {res[name+'_n']:,} parameters, {min(res[name]):.3f} CPU-s/step -> {1000*min(res[name]):.0f} CPU-s for 1000 steps")
