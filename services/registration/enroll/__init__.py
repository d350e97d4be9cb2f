"""Enroll worker: enroll.insert(student_id, firstname, lastname) into PostgreSQL."""
