"""The API gateway's settings, from the environment (``*_FILE`` secrets: see registration.common.settings)."""

from __future__ import annotations

from pydantic import Field

from registration.common.settings import EnvSettings, Float, Int, OptionalPassword, Password, UserName


class ApiSettings(EnvSettings):
    api_user: UserName = Field("api", validation_alias="API_USER")
    api_password: Password = Field(validation_alias="API_PASSWORD")
    # The eligible list is the admin's: a credential of its own, which the UI never holds.
    # Without ADMIN_PASSWORD_FILE the admin routes refuse every caller.
    admin_user: UserName = Field("admin", validation_alias="ADMIN_USER")
    admin_password: OptionalPassword = Field(None, validation_alias="ADMIN_PASSWORD")
    request_deadline: Float = Field(60.0, validation_alias="REQUEST_DEADLINE")
    rpc_timeout: Float = Field(10.0, validation_alias="RPC_TIMEOUT")
    max_body_bytes: Int = Field(64 * 1024, validation_alias="MAX_BODY_BYTES")
    max_admin_body_bytes: Int = Field(4 * 1024 * 1024, validation_alias="MAX_ADMIN_BODY_BYTES")
    forwarded_allow_ips: str = Field("*", validation_alias="FORWARDED_ALLOW_IPS")
    # Signs the proof a successful /authen hands out and /register asks for (a Docker secret).
    proof_key: Password = Field(validation_alias="PROOF_KEY")
    proof_ttl: Int = Field(900, validation_alias="PROOF_TTL")  # as the otp worker's AUTH_TTL
