"""Equivalent PyTorch CPU training loop for `evoattn bench` comparisons.

Same model as evoattn's dot+softmax+none+fixed: pre-LN decoder, learned positions, tied
embedding, GELU MLP 4x, biases, AdamW(0.9, 0.95), grad clip 1.0. Random token batches of
batch x seq_len (the data does not change the cost). Prints JSON like `evoattn bench`.

    python benches/torch_reference.py --threads 2 --steps 10 [--vocab 33278 --d 128 ...]
"""
import argparse, json, math, time
import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--vocab", type=int, default=33278)
p.add_argument("--d", type=int, default=128)
p.add_argument("--layers", type=int, default=2)
p.add_argument("--heads", type=int, default=4)
p.add_argument("--seq", type=int, default=64)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--steps", type=int, default=10)
p.add_argument("--warmup", type=int, default=2)
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()
torch.set_num_threads(a.threads)
# Flush denormals to zero, as evoattn does: without it this loop runs ~7x slower here
# (the backward matmuls of the 33K-way output layer meet denormal gradients).
torch.set_flush_denormal(True)
torch.manual_seed(0)


class Block(nn.Module):
    def __init__(s, d, h):
        super().__init__()
        s.h = h
        s.ln1, s.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        s.qkv, s.o = nn.Linear(d, 3 * d), nn.Linear(d, d)
        s.fc1, s.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(s, x):
        B, T, D = x.shape
        q, k, v = s.qkv(s.ln1(x)).split(D, dim=2)
        q, k, v = (t.view(B, T, s.h, D // s.h).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(D // s.h)
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        att = att.masked_fill(~mask, -1e9).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, D)
        x = x + s.o(y)
        return x + s.fc2(F.gelu(s.fc1(s.ln2(x)), approximate="tanh"))


class LM(nn.Module):
    def __init__(s):
        super().__init__()
        s.tok = nn.Embedding(a.vocab, a.d)
        s.pos = nn.Embedding(a.seq, a.d)
        s.blocks = nn.ModuleList([Block(a.d, a.heads) for _ in range(a.layers)])
        s.lnf = nn.LayerNorm(a.d)

    def forward(s, idx):
        x = s.tok(idx) + s.pos(torch.arange(idx.shape[1]))
        for b in s.blocks:
            x = b(x)
        return F.linear(s.lnf(x), s.tok.weight)  # as nanoGPT's tied lm_head


m = LM()
opt = torch.optim.AdamW(m.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
marks = []
for step in range(a.warmup + a.steps):
    x = torch.randint(0, a.vocab, (a.batch, a.seq))
    y = torch.randint(0, a.vocab, (a.batch, a.seq))
    loss = F.cross_entropy(m(x).view(-1, a.vocab), y.view(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
    opt.step()
    if step + 1 == a.warmup:
        t0 = time.perf_counter()
secs = time.perf_counter() - t0
print(json.dumps({"impl": "pytorch", "torch": torch.__version__, "threads": a.threads, "steps": a.steps,
                  "tokens_per_s": a.steps * a.batch * a.seq / secs, "s_per_step": secs / a.steps}))
