"""The vocabulary of the parameter graph: symmetry groups, roles, edge types, activations.

A neuron's scale symmetry is one of the five groups of docs/design.md 3.1. Internally a group is
a set of allowed factors, written as two bits so that intersection is a bitwise AND:

- bit ``POS`` (1): multiplication by any q > 0 is allowed;
- bit ``NEG`` (2): a sign flip is allowed.

``ANY = POS | NEG`` (any q != 0), ``SIGN = NEG`` ({+1, -1}), ``ONE = 0`` ({1}).
"""
from __future__ import annotations

# -- groups ----------------------------------------------------------------------------------
GROUPS = ("fixed", "perm", "sign", "scale", "linear")
GROUP_ID = {g: i for i, g in enumerate(GROUPS)}
FIXED, PERM, SIGN_G, SCALE, LINEAR = range(5)

ONE, POS, NEG = 0, 1, 2
ANY = POS | NEG
_BITS_TO_GROUP = {ONE: PERM, POS: SCALE, NEG: SIGN_G, ANY: LINEAR}


def group_from_bits(bits: int) -> int:
    """The permutable group whose factors are ``bits`` (see module doc)."""
    return _BITS_TO_GROUP[bits]


# -- roles and edge types --------------------------------------------------------------------
ROLES = ("input", "hidden", "output", "other")
ROLE_ID = {r: i for i, r in enumerate(ROLES)}

#: "recurrent": a hidden -> gate weight of a recurrent layer (``weight_hh``: they make cycles);
#: "state": the structural edge (value 1) from a unit's candidate (LSTM g, GRU n) to its hidden
#: unit (docs/design.md 3.7). New names are appended, so that ids stay stable.
EDGE_TYPES = ("weight", "residual", "norm", "recurrent", "state")
#: edge types whose value is a structural constant 1 (never a parameter, never edited)
STRUCTURAL_EDGE_TYPES = ("residual", "state")
EDGE_TYPE_ID = {t: i for i, t in enumerate(EDGE_TYPES)}

# -- activations -----------------------------------------------------------------------------
#: activation name -> factors of its input that it lets through for every value of its parameters
#: (sigma(q z) = q sigma(z)); an activation whose group depends on its parameters (hardtanh,
#: clamp) may let more through for some (``converters.ops.activation.activation_bits``). New names
#: are appended, so that ids stay stable (the ``act`` node field stores them).
ACTIVATIONS = {
    "identity": ANY,
    "relu": POS,
    "leaky_relu": POS,
    "tanh": NEG,
    "sin": NEG,
    "sigmoid": ONE,
    "gelu": ONE,
    "silu": ONE,
    "relu6": ONE,
    "hardtanh": ONE,     # NEG when min_val = -max_val
    "elu": ONE,
    "selu": ONE,
    "celu": ONE,
    "softplus": ONE,
    "hardswish": ONE,
    "hardsigmoid": ONE,
    "mish": ONE,
    "logsigmoid": ONE,
    "clamp": ONE,        # POS for clamp(min=0) or clamp(max=0), NEG for clamp(-c, c)
    "abs": POS,
    "prelu": POS,
    "rrelu": POS,        # eval mode: a leaky ReLU with slope (lower + upper) / 2
    "softmax": ONE,      # over the features or over tokens (act_params "over"): permutations only
    "log_softmax": ONE,
}
ACT_ID = {a: i for i, a in enumerate(ACTIVATIONS)}

# -- node-feature columns --------------------------------------------------------------------
#: column name -> how it transforms when its neuron is multiplied by q
#: ("neuron": times q, "inverse": divided by q, "invariant": unchanged). Column order is global,
#: so column k means the same in every graph and mixed batches pad with zeros.
NODE_FEATURES = {
    "bias": "neuron",       # bias of the neuron (0 for inputs and bias-free layers)
    "bn_mean": "neuron",    # running mean of a BatchNorm reading this neuron
    "bn_var": "invariant",  # running variance of that BatchNorm
    "bn_count": "invariant",  # num_batches_tracked of the BatchNorm producing this neuron
    "prelu_weight": "invariant",  # slope of the PReLU applied to this neuron
    "bias_hh": "neuron",    # a recurrent layer's second bias (``bias_hh``) of a gate neuron
}
FEATURE_TYPES = ("neuron", "inverse", "invariant")
