"""The words of every check the engine (`checks`) makes, in one place: a template per check id, filled in with
`str.format` by the check that uses it. Keys after a `+` are parts added to a message in some cases only.

Users' CI and the tests compare these messages, so a change here is a change of the report. The classifier head
describes itself (`head.Head.said`, `neither`) and a receptive field its own text (`fields.ReceptiveField`); the
messages below quote them. No torch here.
"""

from __future__ import annotations

#: Errors that stop a model before any check: it cannot be judged as given.
ERRORS = {
    "meta": "Model {name} has {count} parameter or buffer tensor(s) on the meta device (first: {first}): they have "
            "a shape but no values, so it cannot run. Build it with real tensors (e.g. "
            "model.to_empty(device='cpu') and initialise its weights) before judging it.",
    "scripted": "Model {name} is (or contains) a TorchScript module, whose forward pass the engine cannot see into, "
                "so it cannot judge {fields}: this is 'cannot judge', not 'absent'. Give the plain nn.Module (before "
                "torch.jit.script/trace), or drop those fields from the spec.",
}

#: Each check's message, by check id; `{params}`, `{limit}` and the like arrive formatted ("1,234", "unknown").
MESSAGES = {
    "params.stable": "the parameter count changes from call to call ({before:,} before any forward, then {counts} "
                     "after each of {calls} calls, the last in training mode): the model creates parameters in "
                     "forward, so it has no fixed size to judge",
    "params.exact": "{params} parameters, declared exactly {declared}",
    "params.exact+off": " (off by {off:+,})",
    "params.max": "{params} parameters, budget at most {limit}",
    "params.max+over": " ({over:,} over)",
    "params.below": "{params} parameters, budget fewer than {limit}",
    "params.below+over": " ({over:,} too many)",

    "output_shape": "output shapes {shapes} for batch sizes {sizes}, expected (N, {classes})",

    "layer": "{layer} outputs {shape}, declared {declared}",
    "layer+params": "; {params:,} parameters, declared {declared:,}",
    "layer.missing": "no module named {layer!r} (modules: {modules}...)",

    "receptive_field.min": "the last conv ({label}) {sees}, declared at least {limit}",
    "receptive_field.min+sees": "sees {size} input pixels (jump {jump})",
    "receptive_field.min+unknown": "has an unknown receptive field ({unknown})",
    "receptive_field.min+short": " ({short} short)",
    "receptive_field.min.no_conv": "no convolution ran in a forward pass, so no last conv output has a receptive "
                                   "field (declared at least {limit})",
    "receptive_field.layer": "{layer} sees {field}, declared {declared}",
    "receptive_field.layer+whole": "the whole input",
    "receptive_field.layer+size": "{size} per axis",
    "receptive_field.layer.missing": "no module named {layer!r} for its declared receptive field {expected}",
    "receptive_field.layer.no_tensor": "{layer} did not output a tensor in a forward pass, declared receptive "
                                       "field {expected}",

    "require.found": "{feature}: found {calls}",
    "require.said": "{feature}: {said}",
    "require.absent": "no {words} ran in a training-mode forward pass{near_miss}",
    "require+near_miss": "; the closest that ran: {misses}",
    "require+near_miss.dropout": "{call} with p = {p}",
    "require+near_miss.eval": " and training=False",
    "require+near_miss.batchnorm": "{call}, a norm that is not batch norm",
    "require_any.found": "one of {options}: found {found}",
    "require_any.found+feature": "{feature} ({calls})",
    "require_any.absent": "none of {options} ran in a training-mode forward pass{near_misses}",
    "require_any.said": "none of {options}: {said}",

    "batchnorm_after_every_conv": "{normalised} of {convs} conv outputs go straight into batch norm",
    "final_activation": "the output comes from {final}, declared {declared}",
    "lint.double_softmax": "{level}: the model ends in {final}",
    "lint.double_softmax+loss": " and its declared loss is {loss}",
    "lint.double_softmax+why": "; CrossEntropyLoss applies log-softmax itself (return logits), and NLLLoss expects "
                               "log-probabilities, not probabilities",

    "mult_adds.exact": "{mult_adds} mult-adds per image, declared exactly {declared}",
    "mult_adds.exact+unknown": " (cannot be measured for this model, so the check fails)",
    "mult_adds.max": "{mult_adds} mult-adds per image, budget at most {limit}",
    "mult_adds.max+unknown": " (cannot be measured for this model, and an unknown never passes a budget)",
}

#: What a required feature is, in the message that says it did not run (`gap` and `fc` are said by `head`).
FEATURE_WORDS = {
    "batchnorm": "batch norm (any BatchNorm module or F.batch_norm)",
    "dropout": "dropout (any Dropout variant or F.dropout*, p > 0)",
}

#: The loss classes, by the loss a recipe declares, as the double-softmax lint names them.
LOSS_CLASSES = {"cross_entropy": "CrossEntropyLoss", "nll": "NLLLoss"}

#: The classifier head's words (`head.judge_head`), quoted by `require.gap`, `require.fc` and `require_any`:
#: why each word holds or not (`gap.*`, `fc.*`, `neither`), built from what each entry of the head does
#: (`entry.*`, joined by "; and "), the maps it reads (`map.*`) and the calls off the head's path (`elsewhere.*`).
HEAD_MESSAGES = {
    "no_tensor": "the model returned no tensor, so it has no head",
    "map_output": "the output is a {shape} map, not one score per class, so there is no classifier head",
    "no_writer": "no call the trace saw wrote the model's output, so its head cannot be followed",
    "no_map": "the output depends on no spatial map the trace saw, so there is no classifier head to judge",

    "gap.yes": "the classifier {entries}",
    "gap.no": "the classifier {entries}, not a globally average-pooled map{elsewhere}",
    "fc.yes": "the head is fully connected: {layers}; it {entries}",
    "fc.no": "the head has no fully connected layer: it {entries}{elsewhere}",
    "neither": "the classifier {entries}: no global average pool on every path and no fully connected "
               "layer{pools}{linears}",

    "entry.average": "average-pools {map} to 1x1 ({how})",
    "entry.average+mean": "mean over dims {dims}",
    "entry.other_pool": "{kind}-pools {map} to 1x1 ({call}, a global {kind} pool, not an average)",
    "entry.whole_map_conv": "runs {call} with a {kernel} kernel over the whole of {map}",
    "entry.flatten": "flattens {map}{into}",
    "entry.linear": "runs {linear} over the whole of {map}",
    "entry.reads": "reads {map} through {how}{result}{into}",
    "entry.reads+indexing": "indexing (x[...])",
    "entry.reads+result": " to {shape}",
    "entry+into": " into {linear}",

    "map.input": "the {shape} input",
    "map.pooled": "a {shape} map (the output of {call}{how} on a {spatial} map)",
    "map.pooled+kernel": " with kernel {kernel}",
    "map": "a {shape} map",

    "elsewhere.some": "{what} off the head's path: {named}{gate}",
    "elsewhere.only": "the only {what} that ran, {named}, is off the head's path{gate}",
    "elsewhere.every": "every {what} that ran ({named}) is off the head's path{gate}",
    "elsewhere.more": "{count} more",
    "elsewhere+gate": " ({whose} result feeds {call} on a {shape} map{what_for})",
    "elsewhere+gate.inside": ": a gate inside the network",
    "elsewhere.idle": "{call} {where} pools a map that is already 1x1",

    "linear": "Linear({inputs}, {outputs})",
    "where.module": "in `{module}`",
    "where.model": "in the model's own forward",
}
