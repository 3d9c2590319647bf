"""Pure mappings: portal actions to FHIR resources, code tables, R4 facts. No I/O, no imports
from the other packages of this project."""
