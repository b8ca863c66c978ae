"""placeholder while the tcp backend is written"""
