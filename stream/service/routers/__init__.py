"""One ``APIRouter`` per resource; each reads only what ``deps.py`` gives it from ``app.state``."""
