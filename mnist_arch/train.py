"""One training loop for every recipe: data on the device, augmentation per batch, history per epoch.

The whole dataset lives on the training device as uint8 tensors (see `mnist_arch.data`); a batch is an
index into it, converted, augmented and normalised on the device. There is no DataLoader and no
per-sample Python, which is where the reference repositories spend most of their time on a CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from mnist_arch.data import MNIST, normalize, random_affine
from mnist_arch.errors import MnistArchError, ours
from mnist_arch.machine import choose_threads, hardware, keep_freed_memory, native_bf16
from mnist_arch.runs import Epoch, Estimate, TrainResult, judge_rule
from mnist_arch.spec import RECIPE_CHOICES, Recipe

#: A prediction share above this on one class is reported as a collapse. A trained MNIST classifier
#: puts 9-12% of the test set on each class; an untrained or collapsed one puts most on one.
COLLAPSE_SHARE = 0.5


def _known_precision(recipe: Recipe) -> None:
    choices = RECIPE_CHOICES["precision"]
    if recipe.precision not in choices:
        raise MnistArchError(f"Recipe precision {recipe.precision!r} is not one of {', '.join(choices)}.")


def fit_recipe(recipe: Recipe, device: str | torch.device = "cpu") -> tuple[Recipe, str]:
    """The recipe as it trains on `device`, and what was chosen, in words for every report: the one place
    that decides (the trainer applies it, so `mnist-arch train`, the plugin's training items, the tests
    and `bench --train` all train through it).

    A bf16 precision is a measured speed-up where the hardware computes bf16 natively (docs/training.md:
    1.8-2.8x on a CPU with AVX-512 BF16 and AMX, `benchmarks/train_step.py precision`); elsewhere it is
    emulated, 3.8-20x slower than fp32, so the recipe trains in fp32 with its `fp32_changes` (a smaller
    subset and its own threshold where the fp32 seeds call for them). The memory layout and the optimizer
    stay as declared (channels_last is faster in fp32 too; threads: `choose_threads`)."""
    device = torch.device(device)
    _known_precision(recipe)
    if recipe.precision == "fp32":
        return recipe, "fp32"
    if native_bf16(device):
        return recipe, f"{recipe.precision} ({hardware(device)} computes bf16 natively)"
    fitted = recipe_call("fp32_changes", recipe, recipe.in_fp32)
    return fitted, (f"fp32, not the declared {recipe.precision}: {hardware(device)} has no native bf16"
                    + (" (the recipe's fp32_changes apply)" if recipe.fp32_changes else ""))


def detect_collapse(predictions: torch.Tensor, num_classes: int = 10) -> dict | None:
    """{'class': k, 'share': s} when more than COLLAPSE_SHARE of the predictions are class k."""
    counts = torch.bincount(predictions.flatten().cpu(), minlength=num_classes)
    share, cls = (counts.max().item() / max(1, predictions.numel())), int(counts.argmax())
    return {"class": cls, "share": round(share, 4)} if share > COLLAPSE_SHARE else None


#: The class behind each of `RECIPE_CHOICES["optimizer"]` (a test keeps the two the same).
OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
              "adagrad": torch.optim.Adagrad}


#: The kernel behind each optimizer's `fused=True` (torch.optim calls torch._fused_<name>_).
FUSED_OPS = {"sgd": "_fused_sgd_", "adam": "_fused_adam_", "adamw": "_fused_adamw_", "adagrad": "_fused_adagrad_"}


@functools.cache
def fused_kernel(optimizer: str, device_type: str, dtype: torch.dtype = torch.float32) -> bool:
    """Whether the installed torch has a fused kernel for `optimizer` on this device type and dtype.

    torch has no public question for it, and the answer changes with the optimizer, the device and the
    version: the fused CPU kernels came in torch 2.4, and Adagrad's fused kernel was CPU-only until 2.12,
    while its constructor accepts `fused=True` on CUDA and only the first `step()` refuses. So we ask torch
    twice, in its own terms rather than a table of its history that would be our guess:
    1. its dispatcher: is a kernel of the fused operator registered for the device's dispatch key (this
       needs no such device: a CUDA build of torch answers for CUDA on a machine without a GPU);
    2. where the device is here, the optimizer itself: one fused step on a one-element scratch parameter,
       which runs the device check torch runs at a model's first step.
    Asked once per process and combination; any failure to answer counts as no (foreach is always right)."""
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    try:
        registered = key is not None and torch._C._dispatch_has_kernel_for_dispatch_key(
            f"aten::{FUSED_OPS[optimizer]}", key)
    except (AttributeError, RuntimeError, KeyError):  # an older torch without the operator, or the function
        return False
    if not registered:
        return False
    if device_type == "cuda" and not torch.cuda.is_available():
        return True  # the dispatcher's word: there is no device here to try the step on
    try:
        param = torch.zeros(1, device=device_type, dtype=dtype, requires_grad=True)
        param.grad = torch.ones_like(param)
        OPTIMIZERS[optimizer]([param], lr=0.1, fused=True).step()
    except (RuntimeError, TypeError, ValueError, NotImplementedError, AssertionError):
        return False
    return True


def optimizer_kernel(optimizer: str, kinds: Iterable[tuple[str, torch.dtype]]) -> str:
    """"fused" (one kernel over all parameters instead of a loop of small ops per tensor) where torch has
    the optimizer's fused kernel for every (device type, dtype) of the parameters, else "foreach" (a few
    multi-tensor ops, which every device and dtype has)."""
    kinds = list(kinds)
    fused = kinds and all(dtype.is_floating_point and fused_kernel(optimizer, device, dtype) for device, dtype in kinds)
    return "fused" if fused else "foreach"


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimizer over the model's trainable parameters, fused or foreach (`optimizer_kernel`);
    a recipe's own `fused` or `foreach` in optimizer_kwargs is left as it is."""
    if recipe.optimizer not in OPTIMIZERS:
        raise MnistArchError(f"Recipe optimizer {recipe.optimizer!r} is not one of "
                             f"{', '.join(RECIPE_CHOICES['optimizer'])}.")
    params = [p for p in model.parameters() if p.requires_grad]
    kwargs = dict(recipe.optimizer_kwargs)
    if params and "fused" not in kwargs and "foreach" not in kwargs:
        kwargs[optimizer_kernel(recipe.optimizer, {(p.device.type, p.dtype) for p in params})] = True
    return OPTIMIZERS[recipe.optimizer](params, lr=recipe.lr, **kwargs)


def _scheduler(optimizer, recipe: Recipe, epochs: int, steps_per_epoch: int):
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch, **recipe.schedule_kwargs)
    if recipe.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **recipe.schedule_kwargs)
    # Stepped once an epoch, as a course's loop steps them (`EPOCH_SCHEDULES`).
    if recipe.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, **recipe.schedule_kwargs)
    if recipe.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, **recipe.schedule_kwargs)
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, **{"T_max": epochs, **recipe.schedule_kwargs})
    if recipe.schedule is None:
        return None
    raise MnistArchError(f"Recipe schedule {recipe.schedule!r} is not one of "
                         f"{', '.join(RECIPE_CHOICES['schedule'])} or none.")


#: The schedules stepped at the end of each epoch (OneCycle steps every batch, plateau on the test loss).
EPOCH_SCHEDULES = (torch.optim.lr_scheduler.StepLR, torch.optim.lr_scheduler.MultiStepLR,
                   torch.optim.lr_scheduler.CosineAnnealingLR)


class RecipeError(MnistArchError):
    """A failure of mnist-arch's own training set-up (optimizer, schedule, loss, data, precision), never
    reported as the model's: the message names the recipe field whose code raised."""


_RECIPE_ADVICE = (f" Check that field of the recipe; if it is right, the fault is mnist-arch's or this torch's "
                  f"({torch.__version__}).")


def recipe_call(field: str, recipe: Recipe, func: Callable, *args):
    """`func(*args)`, run by us for the recipe's `field`: whatever it raises is reported as ours, naming the
    field (`errors.ours`). Called several times a training step: the words are made only on a failure."""
    def what() -> str:
        value = getattr(recipe, field, None)
        shown = {"optimizer": f"{value!r} with {dict(recipe.optimizer_kwargs)}",
                 "schedule": f"{value!r} with {dict(recipe.schedule_kwargs)}",
                 "precision": f"{value!r}, channels_last={recipe.channels_last}"}.get(field, repr(value))
        return f"the recipe's {field} ({shown})"

    return ours(what, func, *args, error=RecipeError, advice=_RECIPE_ADVICE)


class OutputError(MnistArchError):
    """The model's output is not what a training loss takes: the model's fault (its caller names the model)."""


def class_scores(out: object) -> torch.Tensor:
    """The model's output when it is what a training loss takes, one tensor of shape [batch, classes]; else the
    model's fault, said as such (a tuple, or a [N, 10, 1, 1] head that was never flattened)."""
    if isinstance(out, torch.Tensor) and out.dim() == 2:
        return out
    what = (f"a tensor of shape {list(out.shape)}" if isinstance(out, torch.Tensor)
            else f"a {type(out).__name__}")
    raise OutputError(f"The model's output is {what}, and training needs one tensor of shape [batch, classes]: "
                         "return only the class scores (flatten a [N, C, 1, 1] head, drop extra outputs).")


def compute_loss(recipe: Recipe, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    output = output.float()
    if recipe.loss == "cross_entropy":
        return F.cross_entropy(output, target, label_smoothing=recipe.label_smoothing)
    if recipe.loss == "nll_probs":  # probabilities (a Softmax output): the NLL of their log
        output = output.clamp_min(torch.finfo(output.dtype).tiny).log()
    elif recipe.loss != "nll":
        raise MnistArchError(f"Recipe loss {recipe.loss!r} is not one of {', '.join(RECIPE_CHOICES['loss'])}.")
    # Log-probabilities; label smoothing as cross_entropy applies it (to the log-softmax of its input).
    nll = F.nll_loss(output, target)
    if not recipe.label_smoothing:
        return nll
    return (1 - recipe.label_smoothing) * nll - recipe.label_smoothing * output.mean(1).mean()


# Recipe precisions (RECIPE_CHOICES["precision"]). "bf16": autocast, fp32 weights and optimizer state,
# each weight cast to bf16 for every step's forward (20-28% of a wide_cnn or parallel_cnn step on the CPU,
# docs/training.md). "bf16_weights": weights, gradients and optimizer state in bf16 too: no casts, half
# the optimizer's memory traffic. Batch norm layers stay fp32 (their running statistics lose too much in bf16).
def _autocast(recipe: Recipe, device: torch.device):
    enabled = recipe.precision == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def model_input(x: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    """A float batch [N, C, H, W] in the recipe's memory layout and, for "bf16_weights", in bf16."""
    x = x.contiguous(memory_format=torch.channels_last) if recipe.channels_last else x
    return x.to(torch.bfloat16) if recipe.precision == "bf16_weights" else x


def _inputs(images_u8: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    mean, std = recipe.normalize or (0.0, 1.0)
    return model_input(normalize(images_u8, mean, std).unsqueeze(1), recipe)


def prepare_model(model: nn.Module, recipe: Recipe, device: str | torch.device = "cpu") -> nn.Module:
    """The model on `device`, in the recipe's memory layout (channels_last: NHWC weights) and, for
    "bf16_weights", in bf16 but for its batch norm layers."""
    _known_precision(recipe)
    model = model.to(device)
    if recipe.precision == "bf16_weights":
        model = model.to(torch.bfloat16)
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.float()
    return model.to(memory_format=torch.channels_last) if recipe.channels_last else model


def choose_layout(model: nn.Module, recipe: Recipe, images_u8: torch.Tensor) -> tuple[nn.Module, Recipe, str]:
    """The memory layout of a recipe that leaves it to the trainer (`channels_last=None`), for a model already
    on its device (`prepare_model`): (the model, the recipe with `channels_last` set, the choice in words for
    the run's setting, "" when it was declared or there was nothing to choose).

    channels_last where the device is a CPU whose convolutions oneDNN runs (`torch.backends.mkldnn`) and the
    model has a 2-D convolution: oneDNN's NHWC kernels run a course-style network's step 1.2-1.4x faster on
    AVX-512 and on AVX2 alike (docs/training.md, "A course epoch against the course pipeline"). A model
    whose forward raises in that layout (`x.view(n, -1)` on NHWC activations does) keeps the contiguous one;
    the check is one forward pass on two of the images, in eval mode and without gradients, the random
    number generators left as they were. On CUDA the layout stays contiguous (unmeasured here)."""
    if recipe.channels_last is not None:
        return model, recipe, ""
    contiguous = dataclasses.replace(recipe, channels_last=False)
    device = images_u8.device
    if (device.type != "cpu" or not torch.backends.mkldnn.is_available()
            or not any(isinstance(m, nn.Conv2d) for m in model.modules())):
        return model, contiguous, ""
    nhwc = dataclasses.replace(recipe, channels_last=True)
    model = model.to(memory_format=torch.channels_last)
    mode = model.training
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad(), _autocast(nhwc, device):
            model.eval()
            class_scores(model(_inputs(images_u8[:2], nhwc)))
    except Exception as exc:  # the model's code: whatever it raises sends it back to the contiguous layout
        reason = f"{type(exc).__name__}: {exc}".split("\n")[0][:120]
        return (model.to(memory_format=torch.contiguous_format), contiguous,
                f", contiguous (its forward raised in channels_last: {reason})")
    finally:
        model.train(mode)
    return model, nhwc, ", channels_last (chosen: oneDNN runs this CPU's convolutions)"


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, recipe: Recipe, images_u8: torch.Tensor,
               labels: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the recipe on a batch of uint8 images: normalise (and augment) on the images' device,
    forward at the recipe's precision, loss, backward, optimizer step. Returns the loss and the output,
    detached. The training loop and the training-speed benchmark both run exactly this."""
    x = recipe_call("normalize", recipe, _inputs, images_u8, recipe)
    if recipe.augment is not None:
        fill = -recipe.normalize[0] / recipe.normalize[1] if recipe.normalize else 0.0  # black, normalised
        x = recipe_call("augment", recipe, random_affine, x, recipe.augment, generator, fill)
    return optimize(model, optimizer, recipe, x, labels)


def optimize(model: nn.Module, optimizer: torch.optim.Optimizer, recipe: Recipe, x: torch.Tensor,
             labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward a batch already in the model's input form (`model_input`) at the recipe's precision, loss,
    backward, optimizer step; the loss and the output, detached. The forward and backward passes are the
    model's code; the loss and the optimizer step are ours (`RecipeError` when they raise)."""
    with _autocast(recipe, x.device):
        out = class_scores(model(x))
    loss = recipe_call("loss", recipe, compute_loss, recipe, out, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    recipe_call("optimizer", recipe, optimizer.step)
    return loss.detach(), out.detach()


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, recipe: Recipe,
             batch_size: int = 1000) -> tuple[float, float, torch.Tensor]:
    """(mean loss, accuracy, predictions) on uint8 images, in eval mode, at the recipe's precision
    (a bf16 recipe is judged as it runs, under bf16 autocast)."""
    model.eval()
    device = images.device
    total_loss, predictions = 0.0, []
    for i in range(0, len(images), batch_size):
        with _autocast(recipe, device):
            out = class_scores(model(_inputs(images[i : i + batch_size], recipe)))
        loss = recipe_call("loss", recipe, compute_loss, recipe, out, labels[i : i + batch_size])
        total_loss += loss.item() * len(out)
        predictions.append(out.argmax(1))
    predictions = torch.cat(predictions)
    # The share as an exact count over the set: a float32 mean rounds 9930/10000 to 0.99299997, just under a
    # threshold of 0.993 that the count meets.
    return total_loss / len(images), (predictions == labels).sum().item() / len(labels), predictions


@dataclass(frozen=True)
class RunOptions:
    """How one training run goes, beside its model, recipe and data (`train_model`)."""

    name: str = "model"  # the result's labels
    recipe_name: str = ""
    epochs: int | None = None  # the recipe's unless given
    seed: int = 0
    device: str | torch.device = "cpu"
    time_budget: float | None = None  # seconds, after which the run stops at the next step
    threads: int | None = None  # CPU threads (default: `machine.choose_threads`)
    progress: bool = False  # a tqdm bar per epoch, for an interactive run
    on_epoch: Callable[[Epoch], None] | None = None
    on_estimate: Callable[[Estimate], None] | None = None


def train_model(model: nn.Module, recipe: Recipe, data: MNIST, options: RunOptions = RunOptions()) -> TrainResult:
    """Train `model` with `recipe` on `data` (already on `device`) and evaluate on the test set.

    `options.seed` fixes shuffling, augmentation and dropout. For a repeatable run, also seed before building
    the model (`torch.manual_seed(seed)`), as `mnist-arch train` does, so the initial weights repeat.
    `options.threads`: CPU threads for this run (default: `choose_threads`); restored afterwards. `on_epoch` is
    called with each epoch's `Epoch` as soon as it is evaluated (the CLI prints it); `on_estimate` with what
    the run will take, measured on its own first steps (`_Timer`), a second or so into it.
    A recipe with `consecutive` (the rule tier, docs/rule.md) stops as soon as `runs.judge_rule` is settled.
    """
    device = torch.device(options.device)
    recipe, setting = fit_recipe(recipe, device)  # what it trains at here: the run reports it
    if options.epochs:
        recipe = dataclasses.replace(recipe, epochs=options.epochs)
    previous = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(options.threads or choose_threads(model, recipe))
    try:
        timer = _Timer(device, setting, options.on_estimate) if options.on_estimate is not None else None
        result = _train(model, recipe, data, dataclasses.replace(options, device=device), timer)
        result.threads = torch.get_num_threads() if device.type == "cpu" else 0
        result.device, result.precision = device.type, recipe.precision
        result.setting = setting + result.setting  # and what `_train` chose for the model (layout, memory)
        result.min_accuracy, result.seed, result.consecutive = recipe.min_accuracy, options.seed, recipe.consecutive
        result.max_epochs, result.loss = recipe.epochs, recipe.loss
        return result
    finally:
        torch.set_num_threads(previous)


class _Timer:
    """The run's estimate, from its own steps: the first `WARM` are one-time set-up (lazy layers, kernels'
    first calls) and not counted, the next `TIMED` are; then one 1,000-image test batch, in eval mode, gives
    the evaluation's time. Nothing is thrown away and no random number is drawn: a seed's run is the same
    with or without it."""

    WARM, TIMED, EVAL_BATCH = 2, 5, 1000

    def __init__(self, device: torch.device, setting: str, report: Callable[[Estimate], None]) -> None:
        self.device, self.setting, self.report = device, setting, report
        self.started: float | None = None

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def before_step(self, step: int, steps_per_epoch: int) -> None:
        if step == min(self.WARM, steps_per_epoch - 1):
            self.started = self._now()

    def after_step(self, step: int, model, recipe: Recipe, data: MNIST, epochs: int, steps_per_epoch: int) -> None:
        warm = min(self.WARM, steps_per_epoch - 1)
        if self.started is None or step != min(warm + self.TIMED, steps_per_epoch) - 1:
            return
        step_seconds = (self._now() - self.started) / (step + 1 - warm)
        start = self._now()
        with torch.random.fork_rng(devices=[]):
            evaluate(model, data.test_images[: self.EVAL_BATCH], data.test_labels[: self.EVAL_BATCH], recipe)
        eval_seconds = (self._now() - start) * math.ceil(len(data.test_images) / self.EVAL_BATCH)
        model.train()
        threads = torch.get_num_threads() if self.device.type == "cpu" else 0
        self.report(Estimate(epochs, steps_per_epoch, step_seconds, eval_seconds, hardware(self.device), threads,
                             self.setting, at_most=recipe.consecutive is not None))
        self.started = None


def _train(model: nn.Module, recipe: Recipe, data: MNIST, options: RunOptions, timer: _Timer | None) -> TrainResult:
    epochs, seed, device, name = recipe.epochs, options.seed, options.device, options.name
    time_budget, progress = options.time_budget, options.progress
    torch.manual_seed(seed)  # the model's own randomness (dropout masks)
    generator = torch.Generator(device=device).manual_seed(seed)  # shuffling and augmentation

    model = recipe_call("precision", recipe, prepare_model, model, recipe, device)
    model, recipe, chosen = choose_layout(model, recipe, data.train_images)
    if device.type == "cpu":
        chosen += keep_freed_memory()
    train_x, train_y = data.train_images, data.train_labels
    if recipe.train_subset:
        train_x, train_y = train_x[: recipe.train_subset], train_y[: recipe.train_subset]
    steps_per_epoch = math.ceil(len(train_x) / recipe.batch_size)
    optimizer = recipe_call("optimizer", recipe, make_optimizer, model, recipe)
    scheduler = recipe_call("schedule", recipe, _scheduler, optimizer, recipe, epochs, steps_per_epoch)

    result = TrainResult(name, options.recipe_name, 0, 0.0, 0.0, setting=chosen)
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        order = torch.randperm(len(train_x), generator=generator, device=device)
        # Sums stay on the device so the loop never waits for it; read once per epoch.
        seen, correct, loss_sum = 0, torch.zeros((), device=device), torch.zeros((), device=device)
        # No tqdm object at all without progress: its first instance creates a multiprocessing lock (a named
        # semaphore) that a worker process ending with os._exit would leave behind.
        bar = (tqdm(range(steps_per_epoch), desc=f"{name} {epoch}/{epochs}", leave=False) if progress
               else range(steps_per_epoch))
        for step in bar:
            idx = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
            y = train_y[idx]
            if timer is not None and epoch == 1:
                timer.before_step(step, steps_per_epoch)
            loss, out = train_step(model, optimizer, recipe, train_x[idx], y, generator)
            if isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR):
                recipe_call("schedule", recipe, scheduler.step)
            loss_sum += loss * len(y)
            correct += (out.argmax(1) == y).sum()
            seen += len(y)
            if timer is not None and epoch == 1:
                timer.after_step(step, model, recipe, data, epochs, steps_per_epoch)
            if progress and step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}", acc=f"{correct.item() / seen:.2%}",
                                lr=f"{optimizer.param_groups[0]['lr']:.5f}")
            if time_budget is not None and time.perf_counter() - start > time_budget:
                break
        test_loss, test_acc, predictions = evaluate(model, data.test_images, data.test_labels, recipe)
        lr = optimizer.param_groups[0]["lr"]
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            recipe_call("schedule", recipe, scheduler.step, test_loss)
        elif isinstance(scheduler, EPOCH_SCHEDULES):
            recipe_call("schedule", recipe, scheduler.step)
        result.history.append(Epoch(epoch, loss_sum.item() / seen, correct.item() / seen, test_loss,
                                    test_acc, lr, time.perf_counter() - epoch_start,
                                    detect_collapse(predictions, int(data.test_labels.max()) + 1)))
        if options.on_epoch is not None:
            options.on_epoch(result.history[-1])
        if progress:
            tqdm.write(f"{name} epoch {epoch}/{epochs}: train loss {result.history[-1].train_loss:.4f}, "
                       f"test loss {test_loss:.4f}, test accuracy {test_acc:.2%}, lr {lr:.5f}")
        result.epochs, result.test_accuracy, result.test_predictions = epoch, test_acc, predictions
        if time_budget is not None and time.perf_counter() - start > time_budget:
            break
        if recipe.consecutive is not None and judge_rule(result.history, recipe.min_accuracy, epochs,
                                                         recipe.consecutive).settled:
            break  # the rule's verdict cannot change: passed, or no longer reachable, or the loss is lost
    result.seconds = time.perf_counter() - start
    result.collapsed = detect_collapse(result.test_predictions, int(data.test_labels.max()) + 1)
    return result
