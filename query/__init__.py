"""The read side: counts out of ClickHouse's views, for the seed's heat map, the API and the stats page."""
