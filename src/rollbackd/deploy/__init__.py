"""Safe deploys: rehearse pending migrations on a scratch copy, and migrate with a backup, a watch and a way back."""
