"""Email-OTP worker: email_otp.send(otp, email), the mail carrying the one-time password."""
