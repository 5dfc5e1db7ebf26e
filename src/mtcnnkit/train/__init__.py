"""Training the MTCNN nets on sample shards.

* :mod:`.losses`: the multi-task loss (classification with online hard example mining, box
  and landmark regression, per-task sample masks and the paper's per-stage weights);
* :mod:`.metrics`: per-epoch metric accumulation, the CSV table and the loss/accuracy plot;
* :mod:`.trainer`: :class:`~.trainer.TrainConfig`, the class-balanced batch sampler and
  :func:`~.trainer.train_stage` (checkpoints, resume, best-net export).
"""
