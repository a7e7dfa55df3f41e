"""Scripts that race dmae's fused ops against the pure-TF references."""
