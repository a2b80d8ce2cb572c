"""What Sightline writes to ``output_dir``, and keeps there for a bounded time: the names of every kind of file
(``layout``), the disk's figures and write failures (``stats``), rotated line logs and retention."""
