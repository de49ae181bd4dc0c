"""The CRO service: the catalogue of CRO services, submissions from pharma to a CRO, quotes and
approval, messages between both sides, and blinded samples (DOMAIN.md "CRO services and submissions")."""
