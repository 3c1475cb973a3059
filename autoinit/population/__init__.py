"""Train several members of one structure as one batched model.

The members' parameters are stacked along a new leading dimension (as
``torch.func.stack_module_state`` does) and the forward pass runs once for all of them:

- ``"bmm"``: a plain ``nn.Sequential`` of ``nn.Linear`` layers and activation modules (autoinit's
  :class:`~autoinit.models.MLP`) runs as batched matrix products (``torch.baddbmm``);
- ``"vmap"``: any other model runs through ``vmap(functional_call)``, PyTorch's model-ensembling
  recipe. ``nn.RNN``/``nn.LSTM``/``nn.GRU`` are unrolled into plain tensor operations inside the
  batched model, since ``aten::gru`` and its kin have no batching rule;
- ``"sequential"``: a model that neither can batch (data-dependent control flow, ``.item()``
  in ``forward``, members of different structures, a model that sets
  ``autoinit_batchable = False``) trains member by member with :func:`autoinit.train.fit`, after
  one warning.

The loss of the group is the sum of the members' losses, so one backward pass gives each member its
own gradient; the optimizer (Adam, AdamW, SGD: all elementwise) steps the stacked tensors, so each
member keeps its own moments. The divergence guard's statistics (loss, global gradient norm, first
and last layer gradient norms) are computed for all members at once from the stacked gradients and
judged by the rules of :func:`autoinit.monitor.default_rules` with the same thresholds
(:class:`GuardLimits`); a member that the guard or the ``on_eval`` callback stops is removed from
the stacked tensors (and from the optimizer state) and the others go on. Its
:class:`~autoinit.monitor.Stop` reads as the sequential guard's would.

Batch order: with one seed, every member sees the same batches, in the order that
``train.fit(model, data, budget, seed=seed)`` draws them (search trials share the study's seed).
With one seed per member, each member draws its own order, as ``train.fit`` would with that seed;
the batches are then gathered per member. Either way the results match sequential training of the
same members within float tolerance (batched matrix products and the fused optimizer round
differently). A ``DataLoader`` that is not backed by tensors is iterated once per epoch for the
whole group.

Members must differ only in their tensors (weights, buffers): the batched model runs the first
member's modules. On ``bmm`` their activations may differ too (Linear layers at the same places):
each distinct activation runs once on its members' rows, so a round of configs of several
activations (the confirmation's race) still trains as one model. ``budget.time_limit`` applies
to the group: every member trains the same number of steps. Dropout draws differ from a
sequential run (``vmap(randomness="different")``).

Modules, one job each:

- ``_train``: :func:`train_population` (engine choice) and the batched training loop;
- ``_batchable``: :func:`can_batch`, whether the members can stack and which engine runs them;
- ``_stack``: the stacked tensors and the batched forward pass (``bmm`` and ``vmap``);
- ``_rnn``: RNN/LSTM/GRU unrolled into plain tensor operations, for ``vmap``;
- ``_loss``: each member's loss from the stacked outputs;
- ``_optim``: the optimizer over the stacked tensors and its state when members leave;
- ``_limits``: :class:`GuardLimits`, the guard's thresholds and how options map to them;
- ``_guard``: the guard's rules judged for all members at once;
- ``_evaluate``: every member's validation loss and metric;
- ``_sequential``: the member-by-member fallback through :func:`autoinit.train.fit`;
- ``_results``: :class:`MemberResult` and the ``on_eval`` callback type.

Example:
    >>> models = [build(model_fn, config, seed=s) for s in range(4)]        # doctest: +SKIP
    >>> results = train_population(models, data, Budget(epochs=5), seeds=range(4))
    >>> [r.value if r.stop is None else r.stop.kind for r in results]
"""

from __future__ import annotations

from autoinit.population._batchable import can_batch, one_bmm_structure
from autoinit.population._limits import GuardLimits
from autoinit.population._limits import GuardOption as GuardOption  # the guard option's type
from autoinit.population._results import MemberResult, OnEval, trial_reporter
from autoinit.population._rnn import _UnrolledRNN as _UnrolledRNN  # tested against nn.RNN & co
from autoinit.population._train import ENGINES, train_population

__all__ = ["ENGINES", "GuardLimits", "MemberResult", "OnEval", "can_batch", "one_bmm_structure",
           "train_population", "trial_reporter"]  # fmt: skip
