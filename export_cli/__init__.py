"""`export-service`, the command-line client of the export API: it talks to the API over HTTP only."""
