"""People: faces grouped by person, the user's names, and how sure we are.

    grouping.py       faces into people: HDBSCAN proposals judged on the model's distance scale,
                      with the user's constraints (pure numpy)
    constraints.py    the user's labels as constraints for grouping
    clustering.py     `facebatch cluster`: the library's faces grouped, stable cluster numbers;
                      the only writer of the clusters tables
    labels.py         what the user said: the append-only history of facts, and its state
    actions.py        name, "not", merge, split, ignore, undo, import: what the CLI and the
                      review site both call
    view.py           clusters and labels joined: who each cluster is, conflicts, merge suggestions
    suggestions.py    per-face tags: confirmed, suggested (calibrated confidence) or unknown
    embeddings.py     the embeddings the people stages work with: stored, or through the adapter
    adapter.py        `facebatch train`: the adapter learned from the user's names, its check on
                      held-back names, on and off
    stored_adapter.py the stored adapter (checksummed, weights only) and its application: a leaf
    training.py       the adapter model, batches per person, the triplet miner, the losses, the loop
    recognition.py    `identify`: who is each face of new photos, among the named people
    verification.py   `verify` and `eval pairs`: is it the same person, and how well we answer that
    evaluation.py     quality metrics: clustering against true identities, verification accuracy
"""
