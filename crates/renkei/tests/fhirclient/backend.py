"""SMART Backend Services with the fhirclient library, as a real client runs them against
Renkei: read the CapabilityStatement, find the token endpoint in its oauth-uris extension,
obtain a token with the client assertion given, then read a Patient and search Observations.

Usage: backend.py BASE ASSERTION PATIENT_ID
Prints one JSON line: what it read. Exits non-zero on any failure.
"""
import json
import sys

from fhirclient import client
from fhirclient.models.observation import Observation
from fhirclient.models.patient import Patient

base, assertion, patient_id = sys.argv[1:4]
smart = client.FHIRClient(settings={
    "app_id": "backend",
    "api_base": base,
    "jwt_token": assertion,
    "scope": "system/Patient.rs system/Observation.rs",
})
smart.wants_patient = False
smart.prepare()
smart.authorize()
if not smart.server.auth.access_token:
    sys.exit("no access token")
patient = Patient.read(patient_id, smart.server)
bundle = Observation.where({"subject": f"Patient/{patient_id}"}).perform(smart.server)
print(json.dumps({
    "patient": patient.id,
    "family": patient.name[0].family,
    "observations": sorted(e.resource.id for e in (bundle.entry or [])),
}))
