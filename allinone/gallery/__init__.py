"""Known people kept between runs: the enrolled gallery file (SQLite) and its search."""
