-- Every JSON column keeps the canonical JSON text the store wrote, as the journal,
-- values and contexts always did: jsonb rewrote numbers (1e16 came back as an integer,
-- -0.0 as 0.0) and reordered keys, so a notification's wrong value, a webhook's body,
-- a lens's spec or a check's violations read back otherwise than on SQLite. Nothing
-- queries inside these columns. The store rewrites the rows written before in its
-- canonical form after this script.
--
-- Text search reads a value's JSON with its escapes as spaces, as SQLite's does
-- (episteme.ledger.sql.projector.JSON_ESCAPES: "first line\nsecond" indexed "nsecond"),
-- and in Unicode's composed form, so that an accent written as a combining mark folds
-- as its letter does. One ALTER TABLE rewrites the assertions table once for both.

DROP INDEX IF EXISTS assertions_fts;
ALTER TABLE assertions
    ALTER COLUMN derived_from TYPE text USING derived_from::text,
    DROP COLUMN fts,
    ADD COLUMN fts tsvector GENERATED ALWAYS AS (to_tsvector('simple', translate(
        regexp_replace(
            normalize(subject || ' ' || replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(value, '\\', ' '), '\"', ' '), '\u0000', ' '), '\u0001', ' '), '\u0002', ' '), '\u0003', ' '), '\u0004', ' '), '\u0005', ' '), '\u0006', ' '), '\u0007', ' '), '\b', ' '), '\t', ' '), '\n', ' '), '\u000b', ' '), '\f', ' '), '\r', ' '), '\u000e', ' '), '\u000f', ' '), '\u0010', ' '), '\u0011', ' '), '\u0012', ' '), '\u0013', ' '), '\u0014', ' '), '\u0015', ' '), '\u0016', ' '), '\u0017', ' '), '\u0018', ' '), '\u0019', ' '), '\u001a', ' '), '\u001b', ' '), '\u001c', ' '), '\u001d', ' '), '\u001e', ' '), '\u001f', ' ') || ' ' || coalesce(source, ''), NFC),
            '[[:space:][:punct:]]+', ' ', 'g'
        ),
        'ÀÁÂÃÄÅÇÈÉÊËÌÍÎÏÑÒÓÔÕÖÙÚÛÜÝàáâãäåçèéêëìíîïñòóôõöùúûüýÿĀāĂăĄąĆćĈĉĊċČčĎďĒēĔĕĖėĘęĚěĜĝĞğĠġĢģĤĥĨĩĪīĬĭĮįİĴĵĶķĹĺĻļĽľŃńŅņŇňŌōŎŏŐőŔŕŖŗŘřŚśŜŝŞşŠšŢţŤťŨũŪūŬŭŮůŰűŲųŴŵŶŷŸŹźŻżŽžſƠơƯưǍǎǏǐǑǒǓǔǦǧǨǩǪǫǰǴǵǸǹȀȁȂȃȄȅȆȇȈȉȊȋȌȍȎȏȐȑȒȓȔȕȖȗȘșȚțȞȟȦȧȨȩȮȯȲȳḀḁḂḃḄḅḆḇḊḋḌḍḎḏḐḑḒḓḘḙḚḛḞḟḠḡḢḣḤḥḦḧḨḩḪḫḬḭḰḱḲḳḴḵḶḷḺḻḼḽḾḿṀṁṂṃṄṅṆṇṈṉṊṋṔṕṖṗṘṙṚṛṞṟṠṡṢṣṪṫṬṭṮṯṰṱṲṳṴṵṶṷṼṽṾṿẀẁẂẃẄẅẆẇẈẉẊẋẌẍẎẏẐẑẒẓẔẕẖẗẘẙẛẠạẢảẸẹẺẻẼẽỈỉỊịỌọỎỏỤụỦủỲỳỴỵỶỷỸỹ',
        'aaaaaaceeeeiiiinooooouuuuyaaaaaaceeeeiiiinooooouuuuyyaaaaaaccccccccddeeeeeeeeeegggggggghhiiiiiiiiijjkkllllllnnnnnnoooooorrrrrrssssssssttttuuuuuuuuuuuuwwyyyzzzzzzsoouuaaiioouuggkkoojggnnaaaaeeeeiiiioooorrrruuuusstthhaaeeooyyaabbbbbbddddddddddeeeeffgghhhhhhhhhhiikkkkkkllllllmmmmmmnnnnnnnnpppprrrrrrssssttttttttuuuuuuvvvvwwwwwwwwwwxxxxyyzzzzzzhtwysaaaaeeeeeeiiiioooouuuuyyyyyyyy'
    ))) STORED;
CREATE INDEX assertions_fts ON assertions USING gin (fts);

ALTER TABLE constraints ALTER COLUMN forbid TYPE text USING forbid::text;
ALTER TABLE constraints ALTER COLUMN patterns TYPE text USING patterns::text;
ALTER TABLE constraints ALTER COLUMN items DROP DEFAULT;
ALTER TABLE constraints ALTER COLUMN items TYPE text USING items::text;
ALTER TABLE constraints ALTER COLUMN items SET DEFAULT '[]';
ALTER TABLE lenses ALTER COLUMN spec TYPE text USING spec::text;
ALTER TABLE tokens ALTER COLUMN roles TYPE text USING roles::text;
ALTER TABLE jobs ALTER COLUMN payload TYPE text USING payload::text;
ALTER TABLE checks ALTER COLUMN scope TYPE text USING scope::text;
ALTER TABLE checks ALTER COLUMN items TYPE text USING items::text;
ALTER TABLE checks ALTER COLUMN violations TYPE text USING violations::text;
ALTER TABLE webhooks ALTER COLUMN spec TYPE text USING spec::text;
ALTER TABLE notifications ALTER COLUMN data TYPE text USING data::text;
