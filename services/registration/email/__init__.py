"""Email worker: email.send(student_id, firstname, lastname, email), the confirmation mail."""
