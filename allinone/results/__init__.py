"""What people and tools read afterwards: run.json from the records, the drawn videos, the HTML report."""
