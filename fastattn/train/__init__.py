"""Train small fastattn models on the Python standard library's sources, cached on disk.

    corpus     the stdlib ``*.py`` files, split by file into training and held-out text
    tokenizer  byte-level tokenizer (torch-free), stored in checkpoints as a dict
    tasks      lm / classifier / seq2seq: batches, held-out evaluation set, metrics
    trainer    AdamW on CPU: ``train(task, config, TrainOptions(...)) -> TrainResult``
    cache      ``trained(task, config, steps, seed) -> Path`` of a cached checkpoint
    model_config  the preset a training run starts from, with the command line's changes

Nothing is imported here, so ``fastattn.train.tokenizer`` stays importable without torch.
"""
