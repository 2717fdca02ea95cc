"""The CLI's sub-commands, one module each (`rotator.cli` is the group and
registers them): rotate, leaked, adopt, pause/resume, plan and audit
verify/seal/public-key. Each imports what it needs when it runs."""
