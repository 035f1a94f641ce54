"""ColBERTer (CATALOG 33; Hofstätter et al., https://arxiv.org/abs/2203.13088): a single vector fused with MaxSim
over unique whole-word vectors (BOW^2) with learned contextualised stopwords and reduced dimensions, down to the
1-dimensional exact-match Uni-ColBERTer (`model.ColBERTer`), trained with in-batch negatives and the stopword
sparsity loss (`task.ColBERTerTask`); `check` measures index bytes on disk against plain ColBERT."""
