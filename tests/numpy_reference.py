"""An independent float64 NumPy forward pass of NB201's TinyNetwork, for tests.

Written from NB201's PyTorch definitions (``TinyNetwork``, ``InferCell``, ``ResNetBasicblock``,
``ReLUConvBN``, ``POOLING`` with ``count_include_pad=False``), not from ``cells.skeleton``; it
reads parameters from a Flax variables dict by path.
"""

import numpy as np

EPS = 1e-5
EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))


def conv(x, w, stride=1, pad=0):
    """x: [B, H, W, Cin]; w: [kh, kw, Cin, Cout] (Flax HWIO)."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw = w.shape[:2]
    ho = (x.shape[1] - kh) // stride + 1
    wo = (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, w.shape[3]))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i : i + stride * ho : stride, j : j + stride * wo : stride, :]
            out += patch @ w[i, j]
    return out


def batch_norm(x, p, stats, train):
    if train:
        mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    else:
        mean, var = stats["mean"], stats["var"]
    return (x - mean) / np.sqrt(var + EPS) * p["scale"] + p["bias"]


def avg_pool_3x3_exclude_pad(x):
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    ones = np.pad(np.ones_like(x[..., :1]), ((0, 0), (1, 1), (1, 1), (0, 0)))
    h, w = x.shape[1:3]
    total = sum(padded[:, i : i + h, j : j + w] for i in range(3) for j in range(3))
    count = sum(ones[:, i : i + h, j : j + w] for i in range(3) for j in range(3))
    return total / count


def relu_conv_bn(x, p, s, train, stride=1):
    k = p["conv"]["kernel"].shape[0]
    y = conv(np.maximum(x, 0), p["conv"]["kernel"], stride, (k - 1) // 2)
    return batch_norm(y, p["bn"], s["bn"], train)


def cell(x, p, s, ops, train, relus=None):
    """NB201's InferCell: node j = sum over i < j of op_ij(node i); returns node 3. ``relus``, if
    given, collects each conv edge's ReLU output by module name."""
    nodes = [x]
    for node in range(1, 4):
        total = 0.0
        for src in range(node):
            e = EDGES.index((src, node))
            op, name = ops[e], f"edge_{src}_{node}_{ops[e]}"
            h = nodes[src]
            if op == "none":
                out = np.zeros_like(h)
            elif op == "skip_connect":
                out = h
            elif op == "avg_pool_3x3":
                out = avg_pool_3x3_exclude_pad(h)
            else:
                if relus is not None:
                    relus[name] = np.maximum(h, 0)
                out = relu_conv_bn(h, p[name], s[name], train)
            total = total + out
        nodes.append(total)
    return nodes[-1]


def forward(variables, x, ops, C, N, train):
    """Logits of NB201's TinyNetwork for the cell ``ops`` (6 operator names)."""
    P = _to_numpy(variables["params"])
    S = _to_numpy(variables["batch_stats"])
    x = np.asarray(x, np.float64)
    x = batch_norm(conv(x, P["stem"]["conv"]["kernel"], 1, 1), P["stem"]["bn"], S["stem"]["bn"],
                   train)
    channels = [C] * N + [2 * C] + [2 * C] * N + [4 * C] + [4 * C] * N
    reductions = [False] * N + [True] + [False] * N + [True] + [False] * N
    for i, reduction in enumerate(reductions):
        p, s = P.get(f"cells_{i}", {}), S.get(f"cells_{i}", {})
        if reduction:
            y = relu_conv_bn(x, p["conv_a"], s["conv_a"], train, stride=2)
            y = relu_conv_bn(y, p["conv_b"], s["conv_b"], train)
            b, h, w, c = x.shape
            r = x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
            x = conv(r, p["downsample_conv"]["kernel"]) + y
            continue
        x = cell(x, p, s, ops, train)
        assert x.shape[-1] == channels[i]
    x = np.maximum(batch_norm(x, P["head"]["bn"], S["head"]["bn"], train), 0)
    x = x.mean(axis=(1, 2))
    return x @ P["head"]["classifier"]["kernel"] + P["head"]["classifier"]["bias"]


def _to_numpy(tree):
    if isinstance(tree, dict) or hasattr(tree, "items"):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree, np.float64)


def thin_patterns(variables, x, ops):
    """bool[n, bits]: ReLU sign patterns of TE-NAS's thin network (no stem, one cell, head),
    BatchNorm in training mode over ``x``; bits in the order the engine sorts its paths:
    the cell's conv edges by module name, then the head."""
    P = _to_numpy(variables["params"])
    S = _to_numpy(variables["batch_stats"])
    x = np.asarray(x, np.float64)
    relus = {}
    out = cell(x, P.get("cells_0", {}), S.get("cells_0", {}), ops, True, relus)
    head = np.maximum(batch_norm(out, P["head"]["bn"], S["head"]["bn"], True), 0)
    columns = [relus[k] for k in sorted(relus)] + [head]
    return np.concatenate([c.reshape(len(x), -1) > 0 for c in columns], axis=1)
