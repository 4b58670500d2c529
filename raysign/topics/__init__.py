"""Spectral (tensor-method) LDA: Anandkumar, Ge, Hsu, Kakade, Telgarsky, JMLR 2014."""
