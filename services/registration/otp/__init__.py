"""OTP worker: eligible e-mail list, OTP issue/verification, lockout, "authenticated" markers."""
