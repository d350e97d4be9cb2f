"""Student worker: student.insert(firstname, lastname, email) into PostgreSQL."""
