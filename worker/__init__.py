"""samocode worker: runs an AI coding CLI in a phased loop over a session folder."""
