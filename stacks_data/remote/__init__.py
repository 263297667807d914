"""What comes over the network: HTTP downloads (http: retries, fast failure, where the token goes) and the
Hugging Face Hub (hub: listing, fetching, uploading, offline mirrors and the cache)."""
