"""The read side: listings and summaries answered by indexed key-range queries."""
